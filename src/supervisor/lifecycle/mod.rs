//! An app's life: the pure state machine that decides (`machine`) and the owner task that
//! feeds it inputs and carries out its effects (`owner`).

mod machine;
mod owner;
mod probing;
mod state;

pub(super) use owner::{Actor, Cmd, Init, Reply};
