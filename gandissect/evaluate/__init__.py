"""Measuring the shipped models on fresh SceneWorld images."""
