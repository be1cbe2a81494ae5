"""Many rtmpd processes as one server: a stream directory, worker processes, cross-node play."""
