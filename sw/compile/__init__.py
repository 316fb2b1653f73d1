"""Model -> accelerator: configuration fit, memory images, cycle model, manifest."""
