# The comparator.
