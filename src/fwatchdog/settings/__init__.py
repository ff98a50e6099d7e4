"""Settings: the environment read once into one checked Config, and Go durations."""
