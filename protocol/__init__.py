"""nodenet.protocol: the sans-IO core shared by the daemon and the simulator.

No I/O, no clock reads, no global randomness: time comes in as arguments, randomness as a
`random.Random` (or an injected nonce source), and outputs go back to the caller.
"""
