//! A pipeline's stages, run in order: each is a batch run of its own that commits on its own,
//! so a later stage reads what an earlier one committed (ELT: land raw data into a table, then
//! curate it into another). A failing stage leaves the stages before it committed, and the run
//! can resume at it.

use std::time::{Duration, Instant};

use crate::batch::{self, RunError, RunOptions};
use crate::pipeline::{Pipeline, PipelineError};
use crate::report::RunReport;
use quiver_plugin_host::plugin::Host;

/// A stage failed.
#[derive(Debug, thiserror::Error)]
#[error("stage {stage} failed: {source}\n  stages committed before it: {}\n  to finish the job from this stage: quiver run {pipeline} --from-stage {stage}", if .committed.is_empty() { "none".to_string() } else { .committed.join(", ") })]
pub struct StageError {
    /// The failing stage.
    pub stage: String,
    /// The stages that committed before it, in order.
    pub committed: Vec<String>,
    /// The pipeline file, for the resume hint.
    pub pipeline: String,
    /// Why it failed.
    #[source]
    pub source: Box<RunError>,
}

/// What running a pipeline's stages did.
#[derive(Debug)]
pub struct StagesReport {
    /// Each stage run, in order, with its report.
    pub stages: Vec<(String, RunReport)>,
    /// Stages not run because `--from-stage` started later.
    pub skipped: Vec<String>,
    /// Wall time of all stages.
    pub wall: Duration,
}

/// Runs the pipeline's stages in order, from `from_stage` if given (the stages before it are
/// taken as done), stopping at the first that fails.
pub fn run(
    pipeline: &Pipeline,
    host: &Host,
    options: &RunOptions,
    from_stage: Option<&str>,
) -> Result<StagesReport, StageError> {
    let started = Instant::now();
    let fail = |stage: &str, committed: &[String], e: RunError| StageError {
        stage: stage.to_string(),
        committed: committed.to_vec(),
        pipeline: pipeline
            .file
            .as_ref()
            .map_or_else(|| "PIPELINE".into(), |f| f.display().to_string()),
        source: Box::new(e),
    };
    pipeline
        .validate_stages()
        .map_err(|e| fail("(all)", &[], e.into()))?;
    let stages = pipeline.stages();
    let start = match from_stage {
        None => 0,
        Some(name) => stages
            .iter()
            .position(|s| s.stage_name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = stages.iter().map(|s| s.stage_name()).collect();
                fail(
                    name,
                    &[],
                    PipelineError::Invalid(format!(
                        "--from-stage {name}: the pipeline has no such stage (its stages: {})",
                        names.join(", ")
                    ))
                    .into(),
                )
            })?,
    };
    let skipped = stages[..start]
        .iter()
        .map(|s| s.stage_name().to_string())
        .collect();
    let mut done: Vec<(String, RunReport)> = Vec::new();
    for stage in &stages[start..] {
        let name = stage.stage_name().to_string();
        match batch::run(stage, host, options) {
            Ok(report) => done.push((name, report)),
            Err(e) => {
                let committed: Vec<String> = done.iter().map(|(n, _)| n.clone()).collect();
                return Err(fail(&name, &committed, e));
            }
        }
    }
    Ok(StagesReport {
        stages: done,
        skipped,
        wall: started.elapsed(),
    })
}
