//! `coreheap leaks`: what nothing reachable holds.
