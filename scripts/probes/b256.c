/* batch-256 condensed layer probes: X[256][in] -> Y[256][out]. usage: ./b256 in out sparsity [ncalls] */
#include "common.h"
#define NB 256
static float *XT,*YT;
/* transpose X into XT[tile][in][TW], then per neuron accumulate, then YT[tile][out][TW] -> Y */
#define DEF(name,VT,L,NA,SET1,ZERO,FMA,LD,ST,ADD) \
static void name(int in,int out,int k,const float*v,const uint16_t*ix,const float*X,const float*bias,float*Y){ const int TW=L*NA,nt_=NB/TW; \
 _Pragma("omp parallel num_threads(2)") { int t=omp_get_thread_num(),nt=omp_get_num_threads(); \
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
 _Pragma("omp parallel num_threads(2)") { int t=omp_get_thread_num(),nt=omp_get_num_threads(); __m512i vin=_mm512_mullo_epi32(_mm512_setr_epi32(0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15),_mm512_set1_epi32(in)); \
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
/* compute-only part (no transposes) for zmm tw64, to isolate the core loop */
int main(int argc,char**argv){
  int in=atoi(argv[1]),out=atoi(argv[2]);double sp=atof(argv[3]);int nc=argc>4?atoi(argv[4]):30;int reps=7;double tmin,tmed;
  int k=(int)lround((1-sp)*in);int*idx=malloc((long)out*k*4);make_mask(in,out,k,idx);
  float*v=malloc((long)out*k*4);uint16_t*ix=malloc((long)out*k*2);for(long i=0;i<(long)out*k;i++){v[i]=frnd();ix[i]=idx[i];}
  float*X=aligned_alloc(64,(long)NB*in*4),*Y=aligned_alloc(64,(long)NB*out*4),*bias=malloc(out*4);for(long i=0;i<(long)NB*in;i++)X[i]=frnd();for(int j=0;j<out;j++)bias[j]=frnd();
  XT=aligned_alloc(64,(long)NB*in*4);YT=aligned_alloc(64,(long)NB*out*4);
  printf("== batch %d %d->%d sparsity %.2f k=%d; useful GFLOP %.3f; FMA-peak bound (235 GF/s) %.0f us\n",NB,in,out,sp,k,2.0*NB*out*k/1e9,2.0*NB*out*k/235e3);loadavg("before");
  struct{const char*n;void(*f)(int,int,int,const float*,const uint16_t*,const float*,const float*,float*);int tw;}V[]={
   {"zmm TW=64 gatherT+fusedT",z2_tw64,64},{"zmm TW=32 gatherT+fusedT",z2_tw32,32},{"zmm TW=128 gatherT+fusedT",z2_tw128,128},{"zmm TW=64 (4 acc)",z_tw64,64},{"zmm TW=32 (2x2 acc, split k)",z_tw32,32},{"zmm TW=128 (8 acc)",z_tw128,128},{"ymm TW=32 (4 acc)",y_tw32,32},{"ymm TW=64 (8 acc)",y_tw64,64}};
  for(unsigned q=0;q<sizeof V/sizeof V[0];q++){TIME(V[q].n,nc,reps,V[q].f(in,out,k,v,ix,X,bias,Y));
    double e=0;for(int s=0;s<5;s++){int b=rnd()%NB,j=rnd()%out;double r=bias[j];for(int t=0;t<k;t++)r+=(double)v[(long)j*k+t]*X[(long)b*in+idx[(long)j*k+t]];if(fabs(r-Y[(long)b*out+j])>e)e=fabs(r-Y[(long)b*out+j]);}
    printf("   %.1f useful GFLOP/s, XT tile %ld KB, maxerr %.1e\n",2.0*NB*out*k/1e3/tmin,(long)in*V[q].tw*4/1024,e);}
  loadavg("after");}
