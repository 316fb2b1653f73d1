"""The float models and their training (numpy), the data sets."""
