import Cache
import Foundation
import Kernels
import Models
import Testing
import TestSupport

/// DeepSeek's latent attention caches one `[kv_lora_rank + qk_rope_head_dim]` vector per token and
/// layer, not per-head keys and values.
@Suite struct LatentCacheTests {
    /// Bytes per token = layers x (kv_lora_rank + qk_rope_head_dim) x element size, for the tiny
    /// fixture model and for DeepSeek V3's published config.
    @Test(arguments: [KVCacheDType.fp32, .f16, .bf16])
    func cacheHoldsOnlyTheLatent(dtype: KVCacheDType) throws {
        let tiny = try ModelConfig(huggingFaceConfig: Fixtures.path("tiny/deepseek_v3/config.json"))
        #expect(tiny.layerCount * PagedKVCache.bytesPerTokenPerLayer(config: tiny, dtype: dtype) == 3 * (24 + 8) * dtype.bytesPerElement)

        let v3 = try ModelConfig(huggingFaceConfig: Fixtures.path("deepseek-v3-config/config.json"))
        let perToken = v3.layerCount * PagedKVCache.bytesPerTokenPerLayer(config: v3, dtype: dtype)
        #expect(perToken == 61 * (512 + 64) * dtype.bytesPerElement)
        // What per-head K and V would cost: 128 heads x (192 + 128) per layer, 71x more.
        let perHead = 61 * 128 * (128 + 64 + 128) * dtype.bytesPerElement
        #expect(perHead / perToken == 71)

        // The storage itself: one pool per layer, no value pool.
        let cache = try PagedKVCache(config: tiny, options: KVCacheOptions(memoryBytes: 1 << 20, blockSize: 16, dtype: dtype))
        let blocks = cache.manager.groups[0].pool.blockCount
        #expect(cache.storageBytes == blocks * 16 * 3 * (24 + 8) * dtype.bytesPerElement)
    }

    @Test func deepSeekV3ConfigIsRead() throws {
        let c = try ModelConfig(huggingFaceConfig: Fixtures.path("deepseek-v3-config/config.json"))
        #expect(c.family == .deepseek)
        let mla = try #require(c.mla)
        #expect(mla.queryRank == 1536 && mla.latentRank == 512 && mla.noPositionDim == 128 && mla.ropeDim == 64 && mla.valueDim == 128)
        // qk_head_dim^-0.5 x mscale^2 with mscale = 0.1 ln(40) + 1.
        let mscale = 0.1 * logf(40) + 1
        #expect(abs(mla.softmaxScale - mscale * mscale / Float(192).squareRoot()) < 1e-6)
        #expect(c.moe?.routing == .grouped(sigmoid: true, groups: 8, groupsKept: 4, renormalize: true))
        #expect(c.moe?.denseLayers == [0, 1, 2] && c.moe?.sharedIntermediateSize == 2048 && c.moe?.routedScale == 2.5)
    }
}
