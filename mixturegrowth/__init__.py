"""MixtureGrowth (Pham et al., WACV 2024): two small members whose every layer mixes learned templates,
grown into a large network whose new blocks are new combinations of the trained templates.

Torch-free (the command line is checked before torch loads):

- ``cli``: the flags (``get_args_parser``) and how they combine (``validate_args``);
- ``plan``: the training plan of a run (which phase, learning rate and operators each epoch has);
- ``sources``: the files of other runs a run starts from, recorded in ``sources.json``.

The run (``python main.py``, the entry point):

- ``run``: ``main(args)``, a training run on the shared lifecycle from start to report;
- ``trainee``: ``TrainingRun``, what each epoch of the plan trains, evaluates and saves;
- ``networks``: the network a run starts from, and members / a small network of other runs;
- ``report``: the summary rows, summary.json and the accuracy plot;
- ``evaluation``: ``--evaluate`` / ``--evaluate_ensemble``.

This package imports nothing: import the module you use (``mixturegrowth.run`` loads torch).
"""
