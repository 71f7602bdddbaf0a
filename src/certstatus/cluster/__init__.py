"""A local PostgreSQL primary with streaming replicas, and real faults to rehearse with."""
