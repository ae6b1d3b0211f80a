"""Training the shipped SceneWorld models: resumable runs with checkpoints, logs and progress."""
