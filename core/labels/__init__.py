"""Human labels: recording and revoking them, the rules of what a label is worth, and the words
labels are written with."""
