"""nodenet.daemon: the Trio daemon that drives `nodenet.protocol` on real sockets and LMDB."""
