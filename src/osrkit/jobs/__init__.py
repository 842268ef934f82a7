"""The jobs behind the commands: train, evaluate and report (``pipeline``), and predictions
for images and folders (``predictions``)."""
