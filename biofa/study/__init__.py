"""The study pipeline: data, training, evaluation, attacks, tables and figures.

It sits above the learning-rule library (``biofa.methods``, ``biofa.layers``,
``biofa.convert``, ``biofa.metrics``, ``biofa.models``) and imports from it, never the
other way round. Each module is one step of the study, and each step is a ``biofa``
sub-command (:mod:`biofa.study.cli`) that the Snakemake workflow calls:

    data      data sets by name, each with a fixed validation split
    config    the run config of ``biofa train``: schema, defaults, checks
    run       one run's folder as an object: its files, its config, its model
    train     one model, one rule, one seed, resumable at any step
    evaluate  test error of a run's best weights
    attack    robustness under white- and black-box attacks, through either gradient
    names     the study's shared vocabulary (keys, labels, colours, attack names)
    collect   run folders and attack CSVs into tidy tables
    tables    the paper's error-table layout (.md, .tex, .csv)
    figures   the study's figures
    study_config  the workflow's study config: schema, checks, and the runs it asks for
"""
