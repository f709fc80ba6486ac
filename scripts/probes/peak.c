/* peak FMA GFLOP/s (zmm, ymm) and read bandwidth, 1 and 2 threads. usage: ./peak */
#include "../../suite/bench/probes/common.h"
static volatile float sinkf;
#define FMALOOP(VT,SET,FMA,N,LANES) { VT a[12]; for(int i=0;i<12;i++)a[i]=SET(1.0f+i*1e-7f); VT m=SET(0.999999f),c=SET(1e-7f); \
  for(long it=0;it<N;it++){ for(int i=0;i<12;i++)a[i]=FMA(a[i],m,c);} float s=0; for(int i=0;i<12;i++){float tmp[16];memcpy(tmp,&a[i],sizeof(VT));s+=tmp[0];} sinkf=s; }
static double fma_z(int nt,long N){double t=now();
#pragma omp parallel num_threads(nt)
 FMALOOP(__m512,_mm512_set1_ps,_mm512_fmadd_ps,N,16)
 t=now()-t;return nt*N*12.0*16*2/t/1e9;}
static double fma_y(int nt,long N){double t=now();
#pragma omp parallel num_threads(nt)
 FMALOOP(__m256,_mm256_set1_ps,_mm256_fmadd_ps,N,8)
 t=now()-t;return nt*N*12.0*8*2/t/1e9;}
static float*buf;
/* each thread reads its own slice of total bytes, many passes */
static double bw(int nt,size_t total,int passes){double t0=0;
  for(int rep=0;rep<2;rep++){double t=now();
#pragma omp parallel num_threads(nt)
  {int id=omp_get_thread_num();size_t n=total/4/nt;const float*p=buf+n*id;__m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0;
   for(int ps=0;ps<passes;ps++)for(size_t i=0;i<n;i+=64){a0=_mm512_add_ps(a0,_mm512_load_ps(p+i));a1=_mm512_add_ps(a1,_mm512_load_ps(p+i+16));a2=_mm512_add_ps(a2,_mm512_load_ps(p+i+32));a3=_mm512_add_ps(a3,_mm512_load_ps(p+i+48));}
   sinkf=_mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0,a1),_mm512_add_ps(a2,a3)));}
  t0=now()-t;} return (double)total*passes/t0/1e9;}
int main(){ loadavg("before"); double r[7];
  for(int nt=1;nt<=2;nt++){
    for(int k=0;k<7;k++)r[k]=fma_z(nt,20000000);qsort(r,7,8,cmpd);printf("FMA zmm %d thr: max %.1f med %.1f GFLOP/s\n",nt,r[6],r[3]);
    for(int k=0;k<7;k++)r[k]=fma_y(nt,20000000);qsort(r,7,8,cmpd);printf("FMA ymm %d thr: max %.1f med %.1f GFLOP/s\n",nt,r[6],r[3]);}
  buf=aligned_alloc(64,256<<20);for(size_t i=0;i<(256u<<20)/4;i++)buf[i]=1e-9f*(i&1023);
  size_t sz[]={32<<10,512<<10,2<<20,8<<20,256<<20};int ps[]={20000,2000,500,100,3};
  for(int nt=1;nt<=2;nt++)for(int s=0;s<5;s++){for(int k=0;k<7;k++)r[k]=bw(nt,sz[s],ps[s]);qsort(r,7,8,cmpd);
    printf("read BW %d thr total %6zu KiB: max %.1f med %.1f GB/s\n",nt,sz[s]>>10,r[6],r[3]);}
  loadavg("after");}
