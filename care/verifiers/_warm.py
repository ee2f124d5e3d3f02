"""Preloaded by the forkserver so every verifier worker forks from a process with math-verify warm.

Importing math-verify and running a few typical comparisons compiles its regexes and LaTeX grammar
and imports sympy's lazily loaded parts (simplify, sets, matrices) once, instead of in every
(re)started worker, where that cold start would eat into the first job's deadline.
Never imported by `care.verifiers` itself.
"""

from care.verifiers.math_answers import math_equal

_WARM_UP_PAIRS = [
    ("\\frac{1}{2}", "0.5"),
    ("(x+1)^2", "x^2+2x+1"),
    ("\\sqrt{12}", "2\\sqrt{3}"),
    ("[1, 2)", "(1,2]"),
    ("\\{1, 2\\}", "2, 1"),
    ("x = 3", "3"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("50\\%", "0.5"),
    ("the answer is 12 apples", "12"),
]

for prediction, gold in _WARM_UP_PAIRS:
    math_equal(prediction, gold, fast_path=False)
