//! Errors of the inventory layer: only failures to read a layer as a whole. Problems with single files are
//! warnings in the inventory, never errors. Must never carry HTTP or storage types.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum InventoryError {
    #[error("layer {layer}: cannot read the blob: {source}")]
    Read {
        layer: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {layer}: bad {compression} stream: {message}")]
    Decompress { layer: usize, compression: &'static str, message: String },
    #[error("layer {layer}: bad tar archive: {source}")]
    Tar {
        layer: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {layer}: media type {media_type} is not an image layer")]
    UnsupportedMediaType { layer: usize, media_type: String },
}
