"""Reference solutions of the lesson exercises, one module per lesson (``lesson01`` ... ``lesson10``, ``lesson12``;
lesson 11 has no coding exercise).

Each function has the name and signature of the stub in the matching notebook; ``varlite.exercises.check_<name>``
accepts it (names starting with _ are helpers). Teachers: ``python lessons/render.py --solutions`` renders the
notebooks with these filled in.
"""
