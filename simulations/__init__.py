"""nodenet.simulations: a discrete-event simulator that runs the real `nodenet.protocol` code."""
