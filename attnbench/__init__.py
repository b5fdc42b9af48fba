"""attnbench: which attention kernel should YOLOv12 train with, and what does it cost?"""

__version__ = "0.1.0"
