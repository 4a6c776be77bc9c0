"""Neural Weight Search for task-incremental learning (Jiang & Celiktutan, WACV 2023).

The layers live in ``models/nws.py``; this package holds what turns them into a
task-incremental system:

    pools.py      layer-wise pools learned once by EMA k-means, and the pools file
    storage.py    a task as bit-packed, LZMA-compressed pool indices plus its BatchNorms
    splits.py     the task sequences: split_cifar100, split_fashion, split_digits
    protocol.py   train the tasks one after the other, store each, rebuild and evaluate them

and its run, behind the entry point ``nws.py``:

    cli.py        the command line (pretrain, tasks, evaluate), torch-free; choices.py its tables
    run.py        ``main(args)``: the command's run, one module each: pretrain.py, tasks.py, evaluate.py
    from_args.py  the network config, recipe and loops the flags describe

Nothing is imported here, so ``import weight_search.cli`` loads no torch. ``docs/nws.md`` is the user guide.
"""
