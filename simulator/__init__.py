"""Partner traffic for demos and benchmarks: what schools, police, health and the rest send."""
