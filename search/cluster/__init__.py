"""Ray clusters: reaching one, starting a local one, and submitting a search to one as a Ray Job.

`probe` checks within seconds that a service answers; `raycluster` checks a Ray address, sets up
token authentication for clients and starts a local Ray that listens on loopback only;
`launch` submits `pressroom search` as a Ray Job without letting any secret travel with it.
"""
