//! The protobuf codec of the Workload API: prost, with per-RPC buffers sized to the message.
//!
//! tonic's default codec allocates an 8 KiB encode buffer per RPC and keeps it for the life of a
//! streaming response (the `BytesMut` the messages are split from stays alive with the stream).
//! An open `FetchX509SVID` stream idles almost all of its life, so that buffer was the largest
//! part of its memory. Here the buffer starts empty and grows exactly to the encoded message
//! (`reserve(encoded_len)` before encoding). tonic 0.14 still keeps that one allocation alive
//! between messages (the frozen message and the emptied buffer share it), ~1.1 KiB per idle
//! stream, so the server-streaming RPCs do not go through it: `endpoint::streaming` encodes their
//! messages. Here: unary responses, request decoding, and the generated client.

use prost::Message;
use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic_prost::{ProstCodec, ProstDecoder};

/// Initial buffer per RPC (0: nothing until a message is encoded or received). Also the growth
/// step tonic uses when (de)compressing, which the Workload API does not use.
const BUFFER_SIZE: usize = 0;
/// Encoded bytes handed to HTTP/2 in one piece (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

/// The codec the generated client and server use (`codec_path` in build.rs).
#[derive(Debug, Clone)]
pub struct WorkloadCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for WorkloadCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for WorkloadCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ExactEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ExactEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

/// prost encoding into a buffer reserved to the exact encoded length first (prost writes field by
/// field, and a buffer growing by doubling would end up to twice the message size).
#[derive(Debug, Clone)]
pub struct ExactEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for ExactEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode(buf).map_err(|e| Status::internal(format!("encoding a response: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        settings()
    }
}
