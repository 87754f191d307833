"""Classification backends behind one interface (``serving.base.Classifier``)."""
