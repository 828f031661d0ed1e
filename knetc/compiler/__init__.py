"""The compiler, one module per stage; data flows one way and imports point down:

    parse → specialize (records a tape) → reverse (adjoint IR) → optimize → codegen → cache

``ir`` is the program all stages share; ``pipeline`` runs the stages for one call.
"""
