//! The protobuf contract of Strata: generated prost messages and tonic services, and the
//! encoded descriptor set. Nothing else lives here: conversions to domain types are in
//! `strata-common` and at each service's edge.

/// Internal node-to-node service of bookies (`strata/bookie/v1/bookie.proto`).
pub mod bookie {
    pub mod v1 {
        tonic::include_proto!("strata.bookie.v1");
    }
}

/// The broker's storage format of entries (`strata/broker/v1/entry.proto`).
pub mod broker {
    pub mod v1 {
        tonic::include_proto!("strata.broker.v1");
    }
}

/// Public, client-facing API (`strata/v1/strata.proto`).
pub mod v1 {
    tonic::include_proto!("strata.v1");
}

/// The encoded `FileDescriptorSet` of every Strata `.proto` file.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("strata_descriptor");
