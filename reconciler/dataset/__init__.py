"""The rows of the data: what a change sends and what earlier jobs applied (standard library only).

table.py reads a data file as rows and says when two rows are the same; results.py reads the result
files a finished job leaves; applied.py derives from those which rows each earlier job applied;
facts.py turns that into a change's DataFacts and the exact file a new-rows change sends.
"""
