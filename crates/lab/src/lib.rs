//! The concurrency lab: experiments, raw baselines, tables, charts.
