//! Skeleton: the commands are filled in by their issue. Until then every
//! command says plainly that it is not implemented.

pub mod cli;
