"""The run store: run folders, who may see them, their exports and inference snippets."""
