//! The EBS direct APIs: a file uploaded as a new snapshot (through coldsnap).

use serde_json::json;
use std::path::Path;

use super::ec2::DeleteSnapshot;
use super::{tags_json, Tags};
use crate::aws::plan::Call;
use crate::aws::{error_chain, AwsError, Clients};
use crate::progress::Progress;

/// The block size of the EBS direct APIs (what `StartSnapshot` answers on AWS).
pub const BLOCK_SIZE: u64 = 512 * 1024;
const GIB: u64 = 1 << 30;
/// How long EBS keeps a started snapshot open without a `CompleteSnapshot` (minutes):
/// coldsnap's fixed value.
const START_TIMEOUT_MINUTES: i32 = 10;

/// A file of known size uploaded as a new snapshot: stale uploads of an interrupted run
/// deleted first, then `StartSnapshot`, every block with `PutSnapshotBlock` (zero blocks
/// too: a snapshot's blocks are all written, so its digest is the file's), and
/// `CompleteSnapshot` with the checksum of the block checksums.
#[derive(Debug, Clone)]
pub struct SnapshotUpload {
    pub stale: Vec<String>,
    /// The placeholder the plan shows for the new snapshot's id (`snapshot-id`).
    pub snapshot: &'static str,
    /// What is uploaded, for people ("the disk image").
    pub what: String,
    pub size: u64,
    pub description: String,
    pub tags: Tags,
}

impl SnapshotUpload {
    /// EBS volumes are whole GiB, at least one.
    pub fn volume_size_gib(&self) -> i64 {
        self.size.div_ceil(GIB).max(1) as i64
    }

    fn blocks(&self) -> u64 {
        self.size.div_ceil(BLOCK_SIZE)
    }

    pub fn calls(&self) -> Vec<Call> {
        let mut calls: Vec<Call> = self
            .stale
            .iter()
            .map(|id| {
                DeleteSnapshot {
                    snapshot: id.clone(),
                }
                .call()
            })
            .collect();
        let id = format!("<{}>", self.snapshot);
        calls.push(Call::new(
            "ebs:StartSnapshot",
            // The SDK fills the idempotency token in (coldsnap does not choose one).
            json!({"VolumeSize": self.volume_size_gib(), "Description": self.description, "Tags": tags_json(&self.tags), "Timeout": START_TIMEOUT_MINUTES, "ClientToken": "<a fresh token the AWS SDK makes>"}),
        ));
        calls.push(Call::new(
            "ebs:PutSnapshotBlock",
            json!({
                "SnapshotId": id,
                "BlockIndex": format!("<each of the {} blocks of {}, in parallel>", self.blocks(), self.what),
                "BlockData": "<the block, the last one padded with zeros>",
                "DataLength": BLOCK_SIZE,
                "Checksum": "<the block's SHA-256, base64>",
                "ChecksumAlgorithm": "SHA256",
            }),
        ));
        calls.push(Call::new(
            "ebs:CompleteSnapshot",
            json!({
                "SnapshotId": id,
                "ChangedBlocksCount": self.blocks(),
                "Checksum": "<the SHA-256 of the blocks' SHA-256s in order, base64>",
                "ChecksumAlgorithm": "SHA256",
                "ChecksumAggregationMethod": "LINEAR",
            }),
        ));
        calls
    }

    /// Deletes the stale uploads, then uploads `file` (which must be `size` bytes);
    /// the new snapshot's id, once EBS has it (not yet `completed`).
    pub async fn send(
        &self,
        c: &Clients,
        step: &str,
        file: &Path,
        progress: &Progress,
    ) -> Result<String, AwsError> {
        for id in &self.stale {
            log::warn!("deleting {id}: an interrupted upload of {}", self.what);
            DeleteSnapshot {
                snapshot: id.clone(),
            }
            .send(c, step)
            .await?;
        }
        let size = std::fs::metadata(file)
            .map_err(|e| AwsError::file(file, e))?
            .len();
        if size != self.size {
            return Err(AwsError::step(
                step,
                format!(
                    "{} is {size} bytes, {} were planned: it changed during the deploy",
                    self.what, self.size
                ),
            ));
        }
        let tags: Vec<aws_sdk_ebs::types::Tag> = self
            .tags
            .iter()
            .map(|(k, v)| aws_sdk_ebs::types::Tag::builder().key(k).value(v).build())
            .collect();
        let pb = progress.bytes(size, &format!("{step} upload"));
        let id = coldsnap::SnapshotUploader::new(c.ebs.clone())
            .upload_from_file(
                file,
                Some(self.volume_size_gib()),
                Some(&self.description),
                Some(tags),
                progress.enabled().then_some(pb.clone()),
                Some(coldsnap::UploadZeroBlocks::Include),
                None,
                None,
                None,
            )
            .await
            .map_err(|e| {
                AwsError::step(
                    step,
                    format!("EBS direct upload of {}: {}", self.what, error_chain(&e)),
                )
            })?;
        pb.finish_and_clear();
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_whole_gib_and_blocks() {
        let up = SnapshotUpload {
            stale: vec!["snap-old".into()],
            snapshot: "snapshot-id",
            what: "the disk image".into(),
            size: GIB + 1,
            description: "d".into(),
            tags: vec![],
        };
        assert_eq!(up.volume_size_gib(), 2);
        let calls = up.calls();
        let apis: Vec<&str> = calls.iter().map(|c| c.api.as_str()).collect();
        assert_eq!(
            apis,
            [
                "ec2:DeleteSnapshot",
                "ebs:StartSnapshot",
                "ebs:PutSnapshotBlock",
                "ebs:CompleteSnapshot"
            ]
        );
        assert_eq!(calls[1].params["VolumeSize"], 2);
        assert_eq!(calls[3].params["ChangedBlocksCount"], 2049);
        assert_eq!(calls[3].params["SnapshotId"], "<snapshot-id>");
        let small = SnapshotUpload { size: 1, ..up };
        assert_eq!(small.volume_size_gib(), 1);
    }
}
