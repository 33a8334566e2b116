//! Native plugins (placeholder).
