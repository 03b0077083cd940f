"""The networks of the paper's model zoo (Hu et al., GitHub J-FHu/CEM, ``CEM_Demo/ModelZoo``), written by cem_lab
with the authors' state-dict keys and shapes, so that their released checkpoints load unchanged.

One architecture per file, each naming the paper it comes from and the authors' class whose layout it matches
(a fact read from their repository; their code is not copied). The layouts are pinned by the fixtures of
``tests/models/fixtures/authors_keys/``. Which ``MODEL_LIST`` name builds which class with which arguments is
:mod:`cem_lab.models.authors`' catalogue; architectures whose official keys spandrel already reads (SwinIR, HAT,
RCAN, RRDBNet, DnCNN) are not rewritten here.
"""
