//! Processes: spawning a main process, reaping children, pidfds, finding and ending an app's
//! whole tree, passing held sockets (`activation`), finding what escaped it (`escaped`), reading `/proc`, sampling usage. The
//! lifecycle decides; this module acts.

pub(super) mod activation;
pub(super) mod escaped;
pub(super) mod handover;
pub(super) mod launch;
pub(super) mod outsiders;
pub(super) mod pidfd;
pub(super) mod procfs;
pub(super) mod reaper;
pub(super) mod run_as;
pub(super) mod scan;
pub(super) mod tree;
pub(super) mod usage;
