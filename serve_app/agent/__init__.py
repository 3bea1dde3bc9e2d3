"""The LiveKit agent: a thin worker that joins support rooms and calls the graph's deployment handles."""
