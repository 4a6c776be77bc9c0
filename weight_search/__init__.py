"""Neural Weight Search for task-incremental learning (Jiang & Celiktutan, WACV 2023).

The layers live in ``models/nws.py``; this package holds what turns them into a
task-incremental system:

    pools.py     layer-wise pools learned once by EMA k-means, and the pools file
    storage.py   a task as bit-packed, LZMA-compressed pool indices plus its BatchNorms
    splits.py    the task sequences: split_cifar100, split_fashion, split_digits
    protocol.py  train the tasks one after the other, store each, rebuild and evaluate them

``nws.py`` is the command line (pretrain, tasks, evaluate); ``docs/nws.md`` the user guide.
"""
