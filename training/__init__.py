"""aln.training: train on a cohort and evaluate with the paper's statistics.

Training calls exactly the preprocessing the server runs (:mod:`aln.preprocessing`); evaluation
reports AUC with DeLong 95% confidence intervals and p-values, operating-point metrics with
Wilson intervals, Brier score and calibration, per split.
"""
