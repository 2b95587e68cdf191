"""Solutions to the notebooks' exercises, one module per notebook (``nb03.py`` for notebook 3).

Try an exercise before reading its solution. Each module defines ``CASES = {key: Case(...)}``: the context the
notebook passes to ``eeutils.course.check``, a right answer, and typical wrong answers with the hint each gets;
``tests/test_course.py`` runs every check on all of them.
"""
