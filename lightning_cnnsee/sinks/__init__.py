"""Where pictures and numbers go: every logger of a Trainer (TensorBoard, W&B, MLflow, PNG folders), each PNG
encoded once (:mod:`.writers`). Knows tags and images, not how they were made.
"""
