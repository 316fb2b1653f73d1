"""The integer model and its file (``.npz`` + JSON header)."""
