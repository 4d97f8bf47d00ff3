"""Developer tools, not the app's runtime: the benchmark, the soak test and the random-weight checkpoint writer."""
