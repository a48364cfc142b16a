//! Integration tests: the real `lazarus-pit` binary against temporary
//! cells roots. One module per section of the brief.

mod harness;
mod section_cell;
mod section_checkpoint;
mod section_config;
mod section_control;
mod section_daemon;
mod section_heartbeat;
mod section_http;
mod section_isolation;
mod section_newcomer;
mod section_operators;
mod section_revival;
mod section_schemas;
mod section_trust;
mod web;
