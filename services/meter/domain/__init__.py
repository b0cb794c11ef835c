"""Pure domain of the meter: matching events to meters, window summaries, aggregations, series windows."""
