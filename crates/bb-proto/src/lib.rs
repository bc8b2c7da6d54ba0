//! Generated code for every protocol the farm speaks. Nothing here is
//! written by hand but the module tree that mirrors the proto packages.

// Lints about the shape of generated types are not actionable here.
#![allow(clippy::large_enum_variant)]

pub mod build {
    pub mod bazel {
        pub mod remote {
            pub mod execution {
                pub mod v2 {
                    tonic::include_proto!("build.bazel.remote.execution.v2");
                }
            }
            pub mod asset {
                pub mod v1 {
                    tonic::include_proto!("build.bazel.remote.asset.v1");
                }
            }
        }
        pub mod semver {
            tonic::include_proto!("build.bazel.semver");
        }
    }
}

pub mod google {
    pub mod bytestream {
        tonic::include_proto!("google.bytestream");
    }
    pub mod longrunning {
        tonic::include_proto!("google.longrunning");
    }
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

pub mod bbrs {
    pub mod asset {
        tonic::include_proto!("bbrs.asset");
    }
    pub mod sandbox {
        tonic::include_proto!("bbrs.sandbox");
    }
    pub mod storage {
        tonic::include_proto!("bbrs.storage");
    }
}

pub mod buildbarn {
    pub mod remoteworker {
        tonic::include_proto!("buildbarn.remoteworker");
    }
    pub mod runner {
        tonic::include_proto!("buildbarn.runner");
    }
    pub mod resourceusage {
        tonic::include_proto!("buildbarn.resourceusage");
    }
}

/// The Remote Asset API.
pub use build::bazel::remote::asset::v1 as asset;
/// The REv2 package, under the short name every crate uses.
pub use build::bazel::remote::execution::v2 as reapi;
pub use build::bazel::semver;
pub use google::bytestream;
pub use google::longrunning;
