"""Reference solutions of the lesson exercises, one module per lesson (``lesson01`` ... ``lesson09``).

Each function has the name and signature of the stub in the matching notebook; ``varlite.exercises.check_<name>``
accepts it. Teachers: ``python lessons/render.py --solutions`` renders the notebooks with these filled in.
"""
