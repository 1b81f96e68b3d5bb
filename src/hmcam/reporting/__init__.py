"""The run folder every kind of run writes (:mod:`hmcam.reporting.run_folder`), and its tables, figures and report page.

It sits just above :mod:`hmcam.core`: it knows files and pictures, not what a run computed, so every
domain package can write through it.
"""
