/* The C probes' kernels: what this CPU allows for a condensed (constant fan-in) layer, written
 * with no framework around them. Shared by the stand-alone probe programs (scripts/probes/b1.c,
 * b256.c) and by the library the bench loads to time them beside `fused` in one process
 * (suite/bench/probes/probe_lib.c, suite/bench/vs_probe.py).
 *
 * batch 1: a "permute pack" per group of W = 16 (zmm) or 8 (ymm) output neurons; per window of
 *   B consecutive inputs held in registers, one permute + one FMA per step (pack(): align=1
 *   windows start at multiples of B, align=0 "sliding" windows start at the group's smallest
 *   input not yet taken and are left when fewer than T lanes still have an input in them).
 *   Needs out % W == 0, in % B == 0 (aligned) and a 64-byte aligned bias.
 * batch 256 (NB): x transposed into [in][TW] column tiles, per neuron TW/16 zmm accumulators,
 *   one broadcast weight per kept input; needs in % 16 == 0 and out % 16 == 0.
 * Threads: probe_nthreads (an OpenMP team, static split), 2 unless set. */
#pragma once
#include "common.h"
static int probe_nthreads = 2;
typedef struct { int W,B,ng; int *gw,*ge; uint16_t *woff; uint8_t *wcnt; float *v; uint8_t *ix; long nent,nwin; } Pk;
/* align=1: aligned blocks of B, run until empty. align=0: window starts at min next nnz, leave when active lanes < T */
static Pk pack(int in,int out,int k,const int*idx,const float*val,int W,int B,int align,int T){
  Pk p={W,B,out/W};int ng=p.ng; long cap=(long)out*k+ (long)ng*in; 
  p.gw=malloc((ng+1)*sizeof(int));p.ge=malloc((ng+1)*sizeof(int));
  p.woff=malloc(cap*2);p.wcnt=malloc(cap);p.v=aligned_alloc(64,((cap*W*4+63)/64)*64);p.ix=malloc(cap*W);
  long ne=0,nw=0; int nx[16];
  for(int g=0;g<ng;g++){p.gw[g]=nw;p.ge[g]=ne;for(int l=0;l<W;l++)nx[l]=0;
    for(;;){int w=in;for(int l=0;l<W;l++)if(nx[l]<k){int c=idx[(long)(g*W+l)*k+nx[l]];if(c<w)w=c;}
      if(w==in)break; if(align)w=w/B*B; else if(w+B>in)w=in-B;
      int cnt=0;
      for(;;){int act=0;for(int l=0;l<W;l++)if(nx[l]<k&&idx[(long)(g*W+l)*k+nx[l]]<w+B)act++;
        if(act==0||(cnt>0&&act<T))break;
        for(int l=0;l<W;l++){long r=(long)(g*W+l)*k;if(nx[l]<k&&idx[r+nx[l]]<w+B){p.v[ne*W+l]=val[r+nx[l]];p.ix[ne*W+l]=idx[r+nx[l]]-w;nx[l]++;}else{p.v[ne*W+l]=0;p.ix[ne*W+l]=0;}}
        ne++;cnt++; if(cnt==255)break;}
      p.woff[nw]=w;p.wcnt[nw]=cnt;nw++;}
  }
  p.gw[ng]=nw;p.ge[ng]=ne;p.nent=ne;p.nwin=nw;return p;}

#define GROUPLOOP(W_, LOADX, GETX, VT, ZERO, FMA, ADD, LD, ST) \
  _Pragma("omp parallel num_threads(probe_nthreads)") { int t=omp_get_thread_num(),nt=omp_get_num_threads(); \
  int g0=p->ng*t/nt,g1=p->ng*(t+1)/nt; \
  for(int g=g0;g<g1;g++){ VT a0=ZERO,a1=ZERO,a2=ZERO,a3=ZERO; const float*vp=p->v+(long)p->ge[g]*W_; const uint8_t*ip=p->ix+(long)p->ge[g]*W_; \
    for(int wi=p->gw[g];wi<p->gw[g+1];wi++){ const float*xb=x+p->woff[wi]; int s=p->wcnt[wi]; LOADX; \
      while(s>=4){ a0=FMA(GETX(ip),LD(vp),a0);a1=FMA(GETX(ip+W_),LD(vp+W_),a1);a2=FMA(GETX(ip+2*W_),LD(vp+2*W_),a2);a3=FMA(GETX(ip+3*W_),LD(vp+3*W_),a3);ip+=4*W_;vp+=4*W_;s-=4;} \
      if(s>0){a0=FMA(GETX(ip),LD(vp),a0);ip+=W_;vp+=W_; if(s>1){a1=FMA(GETX(ip),LD(vp),a1);ip+=W_;vp+=W_; if(s>2){a2=FMA(GETX(ip),LD(vp),a2);ip+=W_;vp+=W_;}}} } \
    ST(y+g*W_, ADD(ADD(a0,a1),ADD(ADD(a2,a3),LD(bias+g*W_)))); } }

static void k_z32(const Pk*p,const float*x,const float*bias,float*y){
#define LX __m512 x0=_mm512_loadu_ps(xb),x1=_mm512_loadu_ps(xb+16)
#define GX(q) _mm512_permutex2var_ps(x0,_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(q))),x1)
 GROUPLOOP(16,LX,GX,__m512,_mm512_setzero_ps(),_mm512_fmadd_ps,_mm512_add_ps,_mm512_load_ps,_mm512_storeu_ps)
#undef LX
#undef GX
}
static void k_z16(const Pk*p,const float*x,const float*bias,float*y){
#define LX __m512 x0=_mm512_loadu_ps(xb)
#define GX(q) _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(q))),x0)
 GROUPLOOP(16,LX,GX,__m512,_mm512_setzero_ps(),_mm512_fmadd_ps,_mm512_add_ps,_mm512_load_ps,_mm512_storeu_ps)
#undef LX
#undef GX
}
static void k_y16(const Pk*p,const float*x,const float*bias,float*y){
#define LX __m256 x0=_mm256_loadu_ps(xb),x1=_mm256_loadu_ps(xb+8)
#define GX(q) _mm256_permutex2var_ps(x0,_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(q))),x1)
 GROUPLOOP(8,LX,GX,__m256,_mm256_setzero_ps(),_mm256_fmadd_ps,_mm256_add_ps,_mm256_load_ps,_mm256_storeu_ps)
#undef LX
#undef GX
}
static void k_y8(const Pk*p,const float*x,const float*bias,float*y){
#define LX __m256 x0=_mm256_loadu_ps(xb)
#define GX(q) _mm256_permutevar8x32_ps(x0,_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(q))))
 GROUPLOOP(8,LX,GX,__m256,_mm256_setzero_ps(),_mm256_fmadd_ps,_mm256_add_ps,_mm256_load_ps,_mm256_storeu_ps)
#undef LX
#undef GX
}
/* scalar rows */
static inline void rows(int j0,int j1,int k,const float*v,const uint16_t*ix,const float*x,const float*bias,float*y){
  for(int j=j0;j<j1;j++){const float*vv=v+(long)j*k;const uint16_t*ii=ix+(long)j*k;float s0=0,s1=0,s2=0,s3=0;int t=0;
    for(;t+4<=k;t+=4){s0+=vv[t]*x[ii[t]];s1+=vv[t+1]*x[ii[t+1]];s2+=vv[t+2]*x[ii[t+2]];s3+=vv[t+3]*x[ii[t+3]];}
    for(;t<k;t++)s0+=vv[t]*x[ii[t]]; y[j]=(s0+s1)+(s2+s3)+bias[j];}}
static void k_scalar(int out,int k,const float*v,const uint16_t*ix,const float*x,const float*bias,float*y){
#pragma omp parallel num_threads(probe_nthreads)
 {int t=omp_get_thread_num(),nt=omp_get_num_threads();rows(out*t/nt,out*(t+1)/nt,k,v,ix,x,bias,y);}}
/* dense gemv, 4 rows share x loads */
static void k_dense(int in,int out,const float*Wm,const float*x,const float*bias,float*y){
#pragma omp parallel num_threads(probe_nthreads)
 {int t=omp_get_thread_num(),nt=omp_get_num_threads();int j0=out*t/nt/4*4,j1=out*(t+1)/nt/4*4;
  for(int j=j0;j<j1;j+=4){const float*r0=Wm+(long)j*in,*r1=r0+in,*r2=r1+in,*r3=r2+in;__m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0;
   for(int i=0;i<in;i+=16){__m512 xv=_mm512_load_ps(x+i);a0=_mm512_fmadd_ps(_mm512_load_ps(r0+i),xv,a0);a1=_mm512_fmadd_ps(_mm512_load_ps(r1+i),xv,a1);
     a2=_mm512_fmadd_ps(_mm512_load_ps(r2+i),xv,a2);a3=_mm512_fmadd_ps(_mm512_load_ps(r3+i),xv,a3);}
   y[j]=_mm512_reduce_add_ps(a0)+bias[j];y[j+1]=_mm512_reduce_add_ps(a1)+bias[j+1];y[j+2]=_mm512_reduce_add_ps(a2)+bias[j+2];y[j+3]=_mm512_reduce_add_ps(a3)+bias[j+3];}}}

#define NB 256
static float *XT,*YT;
/* transpose X into XT[tile][in][TW], then per neuron accumulate, then YT[tile][out][TW] -> Y */
#define DEF(name,VT,L,NA,SET1,ZERO,FMA,LD,ST,ADD) \
static void name(int in,int out,int k,const float*v,const uint16_t*ix,const float*X,const float*bias,float*Y){ const int TW=L*NA,nt_=NB/TW; \
 _Pragma("omp parallel num_threads(probe_nthreads)") { int t=omp_get_thread_num(),nt=omp_get_num_threads(); \
  for(int tb=t;tb<nt_*(in/16);tb+=nt){int tile=tb/(in/16),i0=tb%(in/16)*16; float*d=XT+(long)tile*in*TW; \
    for(int b=0;b<TW;b++){const float*s=X+(long)(tile*TW+b)*in+i0; for(int i=0;i<16;i++)d[(long)(i0+i)*TW+b]=s[i];}} \
  _Pragma("omp barrier") \
  int j0=out*t/nt,j1=out*(t+1)/nt; \
  for(int tile=0;tile<nt_;tile++){const float*xt=XT+(long)tile*in*TW; \
   for(int j=j0;j<j1;j++){VT a[NA],c[NA];for(int q=0;q<NA;q++){a[q]=ZERO;c[q]=ZERO;} const float*vv=v+(long)j*k;const uint16_t*ii=ix+(long)j*k; int u=0; \
    if(NA<4){for(;u+2<=k;u+=2){VT w0=SET1(vv[u]),w1=SET1(vv[u+1]);const float*r0=xt+(long)ii[u]*TW,*r1=xt+(long)ii[u+1]*TW; for(int q=0;q<NA;q++){a[q]=FMA(w0,LD(r0+q*L),a[q]);c[q]=FMA(w1,LD(r1+q*L),c[q]);}}} \
    for(;u<k;u++){VT w0=SET1(vv[u]);const float*r0=xt+(long)ii[u]*TW;for(int q=0;q<NA;q++)a[q]=FMA(w0,LD(r0+q*L),a[q]);} \
    VT bb=SET1(bias[j]); float*o=YT+((long)tile*out+j)*TW; for(int q=0;q<NA;q++)ST(o+q*L,ADD(ADD(a[q],c[q]),bb));}} \
  _Pragma("omp barrier") \
  for(int tb=t;tb<nt_*(out/16);tb+=nt){int tile=tb/(out/16),j0=tb%(out/16)*16;const float*s=YT+((long)tile*out+j0)*TW; \
    for(int b=0;b<TW;b++){float*d=Y+(long)(tile*TW+b)*out+j0;for(int i=0;i<16;i++)d[i]=s[i*TW+b];}} }}
DEF(z_tw32,__m512,16,2,_mm512_set1_ps,_mm512_setzero_ps(),_mm512_fmadd_ps,_mm512_load_ps,_mm512_store_ps,_mm512_add_ps)
DEF(z_tw64,__m512,16,4,_mm512_set1_ps,_mm512_setzero_ps(),_mm512_fmadd_ps,_mm512_load_ps,_mm512_store_ps,_mm512_add_ps)
DEF(z_tw128,__m512,16,8,_mm512_set1_ps,_mm512_setzero_ps(),_mm512_fmadd_ps,_mm512_load_ps,_mm512_store_ps,_mm512_add_ps)
DEF(y_tw32,__m256,8,4,_mm256_set1_ps,_mm256_setzero_ps(),_mm256_fmadd_ps,_mm256_load_ps,_mm256_store_ps,_mm256_add_ps)
DEF(y_tw64,__m256,8,8,_mm256_set1_ps,_mm256_setzero_ps(),_mm256_fmadd_ps,_mm256_load_ps,_mm256_store_ps,_mm256_add_ps)

#define DEF2(name,NA) \
static void name(int in,int out,int k,const float*v,const uint16_t*ix,const float*X,const float*bias,float*Y){ const int TW=16*NA,nt_=NB/TW; \
 _Pragma("omp parallel num_threads(probe_nthreads)") { int t=omp_get_thread_num(),nt=omp_get_num_threads(); __m512i vin=_mm512_mullo_epi32(_mm512_setr_epi32(0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15),_mm512_set1_epi32(in)); \
  for(int tb=t;tb<NB/16;tb+=nt){int tile=tb*16/TW,b0=tb*16%TW; float*d=XT+(long)tile*in*TW+b0; const float*s=X+(long)tb*16*in; \
    for(int i=0;i<in;i++)_mm512_store_ps(d+(long)i*TW,_mm512_i32gather_ps(vin,s+i,4));} \
  _Pragma("omp barrier") \
  int j0=out*t/nt,j1=out*(t+1)/nt; float buf[16*TW] __attribute__((aligned(64))); __m512i vtw=_mm512_mullo_epi32(_mm512_setr_epi32(0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15),_mm512_set1_epi32(TW)); \
  for(int tile=0;tile<nt_;tile++){const float*xt=XT+(long)tile*in*TW; \
   for(int j=j0;j<j1;j++){__m512 a[NA],c[NA];for(int q=0;q<NA;q++){a[q]=_mm512_setzero_ps();c[q]=a[q];} const float*vv=v+(long)j*k;const uint16_t*ii=ix+(long)j*k; int u=0; \
    if(NA<4){for(;u+2<=k;u+=2){__m512 w0=_mm512_set1_ps(vv[u]),w1=_mm512_set1_ps(vv[u+1]);const float*r0=xt+(long)ii[u]*TW,*r1=xt+(long)ii[u+1]*TW; for(int q=0;q<NA;q++){a[q]=_mm512_fmadd_ps(w0,_mm512_load_ps(r0+q*16),a[q]);c[q]=_mm512_fmadd_ps(w1,_mm512_load_ps(r1+q*16),c[q]);}}} \
    for(;u<k;u++){__m512 w0=_mm512_set1_ps(vv[u]);const float*r0=xt+(long)ii[u]*TW;for(int q=0;q<NA;q++)a[q]=_mm512_fmadd_ps(w0,_mm512_load_ps(r0+q*16),a[q]);} \
    __m512 bb=_mm512_set1_ps(bias[j]); for(int q=0;q<NA;q++)_mm512_store_ps(buf+(j&15)*TW+q*16,_mm512_add_ps(_mm512_add_ps(a[q],c[q]),bb)); \
    if((j&15)==15){float*o=Y+(long)tile*TW*out+(j-15); for(int b=0;b<TW;b++)_mm512_storeu_ps(o+(long)b*out,_mm512_i32gather_ps(vtw,buf+b,4));}}} }}
DEF2(z2_tw32,2)
DEF2(z2_tw64,4)
DEF2(z2_tw128,8)
