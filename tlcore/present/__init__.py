"""Live demo mode (issue 22): a presenter's room for one run, the audience link that opens it,
the room's limits and tally, and the inbox of audience photos that can teach the model."""
