"""MixtureGrowth (Pham et al., WACV 2024): two small members whose every layer mixes learned templates,
grown into a large network whose new blocks are new combinations of the trained templates.

``plan``: the training plan of a run (which phase, learning rate and operators each epoch has), built
and checked from the command line before torch loads. The run itself is ``main.py``.
"""
