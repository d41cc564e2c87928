"""APIs of the systems Model Foundry replaces, as thin layers over its own parts."""
