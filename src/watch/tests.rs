//! Tests of the watch loop's own rules, on paused time with the simulators.
