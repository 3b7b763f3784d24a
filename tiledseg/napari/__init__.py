"""tiledseg in napari: a dock widget to train on scribbles, preview live and segment all.

Installed with the ``napari`` extra (``pip install "tiledseg[napari]"``); napari finds it
through the npe2 manifest ``napari.yaml`` beside this file. Nothing here imports napari or
Qt until the widget is made.
"""
