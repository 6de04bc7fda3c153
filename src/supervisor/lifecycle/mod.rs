//! An app's life: the pure state machine that decides (`machine`) and the owner task that
//! feeds it inputs and carries out its effects (`owner`).

mod machine;
mod owner;
mod probing;
mod state;
mod triggers;

pub(super) use triggers::{must_exist, TriggerReport};

pub(super) use owner::{Actor, Cmd, Init, Reply};
